import sys

from superkern.cli import main

sys.exit(main())
