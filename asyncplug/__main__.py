from asyncplug.client import main

raise SystemExit(main())
