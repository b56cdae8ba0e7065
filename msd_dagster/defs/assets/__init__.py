"""The assets of the code location. What every one of them shares: who owns it, and the pool
that limits how many steps write to the database at once."""

OWNERS = ["team:data-engineering"]
WAREHOUSE_POOL = "msd_warehouse"
