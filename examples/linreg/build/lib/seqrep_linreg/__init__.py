"""An example seqrep method package (see `seqrep_linreg.method`)."""
