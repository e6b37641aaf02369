"""`python -m hma.demo` (what `make demo` runs)."""

from hma.demo.run import main

main()
