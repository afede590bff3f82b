"""The server's side of a run (no torch here): the SQLite registry, the FIFO run manager, the
launch of worker processes, stop requests and the output_dir rule."""
