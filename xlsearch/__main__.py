"""`python -m xlsearch`: the command line."""

from xlsearch.cli.app import main

main()
