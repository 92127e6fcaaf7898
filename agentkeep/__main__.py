"""`python -m agentkeep ...` is the `agentkeep` command."""

from agentkeep.cli import main

if __name__ == "__main__":
    main()
