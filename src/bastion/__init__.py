"""bastion: attack, defend and honestly evaluate image classifiers with adversarial examples."""

__version__ = "0.1.0"

__all__ = ["__version__"]
