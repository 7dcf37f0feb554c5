from pointea.cli import main

raise SystemExit(main())
