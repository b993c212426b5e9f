"""`python -m netbootgen.aoe ...` runs the `serve` command (for tests and ad-hoc use)."""

from netbootgen.aoe.command import serve_command

if __name__ == "__main__":
    serve_command(prog_name="python -m netbootgen.aoe")
