"""The ``quantkit`` command line: one thin module per subcommand."""
