"""One thin module per verb: parse options, call nlpcli.api, print."""
