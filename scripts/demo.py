"""`make demo`: the main job on the wire emulator, in seconds. Same as `avionics demo`."""

from avionics.demo import main

raise SystemExit(main())
