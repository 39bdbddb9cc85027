from isense_slurm.cli import main

raise SystemExit(main())
