"""The SQL family: what every dialect shares (base.py: tables, indexes and statements from the
specs, no I/O; the kernel in _async/kernel.py, its sync twin generated) and one module per
dialect (sqlite, postgres, mysql, singlestore)."""
