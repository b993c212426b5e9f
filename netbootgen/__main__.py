from netbootgen.cli import main

main()
