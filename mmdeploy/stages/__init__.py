"""One module per command's orchestration: reads artifacts, runs passes and backends,
writes artifacts.  Transformations live in :mod:`mmdeploy.passes`, runtimes in
:mod:`mmdeploy.backends`; stages tie them together."""
