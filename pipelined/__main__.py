"""`python -m pipelined` is the same as the `pipelined` command."""

from pipelined.entry import main

main()
