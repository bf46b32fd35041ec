from harness.coordinator.server import main

raise SystemExit(main())
