"""`python -m fastgw`: the same as the `fastgw` console script."""

from fastgw.cli import main

raise SystemExit(main())
