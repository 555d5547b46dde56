"""The supervisor: runs each program in its own process group and keeps it up."""
