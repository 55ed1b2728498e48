from bastion.cli import main

main()
