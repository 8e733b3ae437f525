"""The click commands of `pipelined`, in modules of commands that import alike.

`pipelined.cli` maps each command name to its function here and imports a
module only when one of its commands is looked up, so running a command loads
that module, `common` and what the command itself imports. A module here
imports `common` and never `pipelined.cli` or another command module.
"""

__all__: list[str] = []
