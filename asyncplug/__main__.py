from asyncplug.cli import main

raise SystemExit(main())
