"""The layer contract: bastion's packages only import from their own layer or the layers below.

    foundation  errors, _rng, _checks, _model, _wrap, _device, _outputs, _threads, registry, progress, threat,
                bastion
    inputs      data, defenses (input transformations and output masking: tensors in, tensors out), distributed
    models      models (architectures, weights, the shipped zoo, which may come with a defense in front)
    attacks     attacks (the foundation only, whose model protocol is all they know of a model: no data sets,
                no architectures, no defenses)
    training    training (the loop, adversarial training, BaRT training, surrogate and substitute training)
    analysis    eval, viz
    front ends  cli, web, demo, factory, _cli_render, __main__

Every import counts, also one inside a function (a late import is still a dependency).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "bastion"

LAYERS: dict[str, int] = {
    **dict.fromkeys(["", "errors", "_rng", "_checks", "_model", "_wrap", "_device", "_outputs", "_threads",
                     "registry", "progress", "threat"], 0),
    **dict.fromkeys(["data", "defenses", "distributed"], 1),
    "models": 2,
    "attacks": 3,
    "training": 4,
    **dict.fromkeys(["eval", "viz"], 5),
    **dict.fromkeys(["cli", "web", "demo", "factory", "_cli_render", "__main__"], 6),
}


#: units that may import less than every lower layer: the highest layer each may import from
ONLY: dict[str, int] = {"attacks": 0}


def _unit(module: str) -> str:
    """``bastion.attacks.pgd`` -> ``attacks``; ``bastion`` -> ``""``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _module_of(path: Path, root: Path = SRC) -> str:
    rel = path.relative_to(root.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def imports(path: Path, root: Path = SRC) -> list[tuple[int, str]]:
    """(line, imported bastion module) for every import in ``path``, at any depth."""
    out = []
    module = _module_of(path, root)
    pkg = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names if a.name.split(".")[0] == "bastion"]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative import
                base = pkg.split(".")[: len(pkg.split(".")) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            if mod.split(".")[0] == "bastion":
                out.append((node.lineno, mod))
    return out


def violations(root: Path = SRC) -> list[str]:
    found = []
    for path in sorted(root.rglob("*.py")):
        unit = _unit(_module_of(path, root))
        if unit not in LAYERS:
            found.append(f"{path.relative_to(root.parent)}: {unit!r} has no layer (add it to tests/test_layers.py)")
            continue
        for line, mod in imports(path, root):
            target = _unit(mod)
            if target not in LAYERS:
                found.append(f"{path.relative_to(root.parent)}:{line} imports {mod}, which has no layer")
            elif target != unit and LAYERS[target] > ONLY.get(unit, LAYERS[unit]):
                found.append(f"{path.relative_to(root.parent)}:{line}: {unit} (layer {LAYERS[unit]}) imports {mod} "
                             f"(layer {LAYERS[target]})")
    return found


def test_no_layer_imports_a_higher_one():
    assert violations() == []


def test_the_check_fails_on_a_reversed_import(tmp_path):
    pkg = tmp_path / "bastion"
    (pkg / "attacks").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "attacks" / "__init__.py").write_text("")
    (pkg / "attacks" / "bad.py").write_text("def f():\n    from bastion.eval import Evaluation\n    return Evaluation\n")
    (pkg / "attacks" / "rel.py").write_text("from ..training import fit\n")
    found = violations(pkg)
    assert len(found) == 2 and "bad.py:2: attacks (layer 3) imports bastion.eval (layer 5)" in found[0]
    assert "rel.py:1: attacks (layer 3) imports bastion.training (layer 4)" in found[1]


@pytest.mark.parametrize("unit", ["attacks", "defenses", "data"])
def test_importing_a_lower_layer_loads_no_higher_one(unit):
    """``import bastion.attacks`` loads only the foundation and the attacks (it used to load 39 modules, every
    data loader and the training loop among them)."""
    import subprocess
    import sys

    code = (f"import sys, bastion.{unit}; "
            "print(' '.join(sorted({m.split('.')[1] for m in sys.modules if m.startswith('bastion.')})))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    higher = [u for u in loaded if u != unit and LAYERS.get(u, 99) > ONLY.get(unit, LAYERS[unit])]
    assert higher == []
