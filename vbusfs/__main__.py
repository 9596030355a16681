from vbusfs.cli import main

raise SystemExit(main())
