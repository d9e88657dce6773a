"""``python -m experiments sweep``: a hyperparameter search with Optuna, from one machine to a cluster.

    python -m experiments sweep --config configs/mnist_convnet.yaml --sweep configs/sweeps/mnist_convnet.yaml
    python -m experiments sweep --config mnist_convnet --sweep mnist_convnet --sweep.n_trials 40 \\
        --sweep.storage postgresql://user:password@db-host/sweeps      # the same, on every machine

The command line is ``fit``'s (stacked ``--config`` files, flags that override, ``--help``,
``--print_config``) plus a ``sweep`` section (``Sweep``), given as a file (``--sweep FILE``) and flags
(``--sweep.n_trials 20``).

- Each trial is an ordinary run: the worker writes the trial's config (the command's config with the
  trial's values) and runs ``fit --config`` on it in a child process, which gets its own
  ``lightning_logs/<experiment>/version_N`` with ``config.yaml``, checkpoints and TensorBoard events
  (and hparams), so ``fit --config <that config.yaml>`` reruns it. The child reports the sweep's metric
  after every validation (``trial.py``); the pruner stops it early.
- A trial's value is the best value of the metric over its validations, as the best checkpoint keeps.
- The study lives in a database: by default an SQLite file beside the runs
  (``lightning_logs/<experiment>/sweeps/optuna.db``), or any URL Optuna accepts. Workers that run the
  same command on one study share its trials: ``sweep.n_trials`` counts the study's finished trials
  over all of them (and over reruns: the same command continues a study until it has that many). A
  worker takes a trial under a lock (a file lock for SQLite, an advisory lock for PostgreSQL), so
  workers started together never run more than that many.
- Each worker beats a heartbeat while its trial runs. A worker that is killed stops beating, and the
  next worker to take a trial marks that one failed; a worker interrupted (Ctrl-C, SIGTERM) stops its
  trial (which writes ``last.ckpt``) and marks it failed itself.
- A database that goes away (a server restart, a failover, the network) is waited for, up to
  ``sweep.patience`` (10 minutes by default; storage.py's ``Patience``): each database call is retried,
  the trials' training goes on meanwhile and only their reports wait, and a result is never lost or
  counted twice. A trial whose worker died during the outage is failed once the server has been up for
  two heartbeats, and run again. Past the patience a worker ends with one ``error:`` line; the same
  command continues the study.
- The study reads right in optuna-dashboard (``optuna-dashboard sqlite:///lightning_logs/<experiment>/
  sweeps/optuna.db --artifact-dir lightning_logs/<experiment>/sweeps/artifacts``, the line a worker
  prints as it starts): the metric is the study's metric name (``val/rmse`` on the axes, not "Objective
  0"); parameters are named by their keys as the sweep file writes them, in the study, the console and
  the report alike; a trial's user attributes are its run folder, host and worker, and its config is an
  Optuna artifact (``trial_<n>.yaml``, opened from the trial's page), see worker.py.
- When a worker ends it writes the study's report in ``lightning_logs/<experiment>/sweeps/<study>/``:
  ``best.yaml`` (the best trial's config, for ``fit --config``), ``trials.csv``, and Optuna's
  optimisation-history and parameter-importance plots as PNGs and in TensorBoard; it prints the table.

The package's files: ``command.py`` the command line (``Sweep``'s settings, ``SweepCLI``) and ``main``;
``worker.py`` the worker that takes and runs trials; ``space.py`` the search space; ``storage.py`` the
study's database and its locks; ``trial.py`` the trial's side, inside its ``fit``; ``report.py`` the
study's report. The package builds on the command (``SweepCLI`` is an ``ExperimentCLI``) and the command
never imports it: experiments/main.py imports ``command`` for ``python -m experiments sweep`` only (Optuna
is an extra), and experiments/cli.py finds a trial's callback, ``trial.TrialReport``, by name.
"""
