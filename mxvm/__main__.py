from mxvm.cli.main import main

raise SystemExit(main())
