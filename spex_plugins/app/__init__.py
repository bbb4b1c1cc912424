"""The application around the library: the demo (:mod:`.demo`) and the HTML report
(:mod:`.report`) of the ``spex-plugins`` command line (:mod:`spex_plugins.cli`)."""
