"""`python -m agentkeep ...` is the `agentkeep` command."""

from agentkeep.cli import app

if __name__ == "__main__":
    app(prog_name="agentkeep")
