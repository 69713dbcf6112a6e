"""`python -m clipper.frontend.management`: see `clipper.frontend.management.server.main`."""

from .server import main

raise SystemExit(main())
