"""Operator commands of ``msd-dagster`` that sit on top of every layer (cli.py dispatches to
them): they may use the generator, the sources and the warehouse together, which the layers
themselves never do."""
