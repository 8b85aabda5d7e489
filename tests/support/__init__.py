"""What tests share: waiting, clips, job rows, the pipeline as processes, and the fixtures in tests/conftest.py's
`pytest_plugins`. Test modules import from here, never from another test module or a conftest."""
