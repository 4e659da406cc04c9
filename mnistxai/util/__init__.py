"""What every part of the package shares and none owns: the project's input-error type, atomic
file writes, the jit with this project's XLA options, named random streams, the command-line
wrapper."""
