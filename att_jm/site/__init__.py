"""The local site a checkout runs: the `var/` layout, users and their roles, their secrets,
the TLS certificates and the broker's configuration, made by `att-jm setup` (which `./run.sh`
calls) and kept by `att-jm users`.

    var/att-jm.toml            the settings every `att-jm` verb run from the checkout reads
    var/users.json             user name -> role (the broker's ACL and the service's own check)
    var/secrets/NAME.password  each user's password (0600; shown once, when made)
    var/broker/                mosquitto's config, password file, ACL, plugin, data, log
    var/tls/                   a CA, and the broker's certificate signed by it
"""
