"""The msgctl platform: a sans-I/O core, the runtimes around it and their backend adapters."""
