"""The fast paths beside Feast: register, materialize, point-in-time training sets, online lookups, the HTTP server,
ANN retrieval. Feast object definitions live in `feature_repo`; this package applies and serves them."""
