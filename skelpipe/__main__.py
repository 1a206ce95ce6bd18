from skelpipe.cli import main

main()
