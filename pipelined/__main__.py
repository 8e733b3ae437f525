"""`python -m pipelined` is the same as the `pipelined` command."""

from pipelined.cli import main

main()
