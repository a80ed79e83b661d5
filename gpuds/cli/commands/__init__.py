"""The commands of ``gpuds``, one module each: its options, its help, and one call into
:mod:`gpuds.api` (imported inside the command, so that listing the commands imports no stage).

A new command is one module here, named for the command and holding a function of that name,
plus its name in :data:`gpuds.cli.app.COMMANDS`.
"""
