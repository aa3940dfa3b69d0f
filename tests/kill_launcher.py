"""A `kerascls` launcher that kill -9s itself right after a resume save (epoch E, batch B).

Usage: python -c LAUNCHER E B TRAIN_ARGS... (shared by the resume and best-epoch tests).
"""

import textwrap

LAUNCHER = textwrap.dedent("""
    import os, signal, sys
    from kerascls.training import callbacks
    from kerascls import cli

    epoch_at, batch_at = int(sys.argv[1]), int(sys.argv[2])
    save, begin = callbacks.Backup._save_model, callbacks.Backup.on_epoch_begin

    def on_epoch_begin(self, epoch, logs=None):
        self._test_epoch = epoch
        begin(self, epoch, logs)

    def _save_model(self):
        save(self)
        if getattr(self, "_test_epoch", -1) == epoch_at and self._last_batch_seen >= batch_at:
            os.kill(os.getpid(), signal.SIGKILL)

    callbacks.Backup.on_epoch_begin = on_epoch_begin
    callbacks.Backup._save_model = _save_model
    cli.run(["kerascls", *sys.argv[3:]])
""")
