from resonate.cli import main

raise SystemExit(main())
