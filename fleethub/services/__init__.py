"""The fleethub services: auth, api, spawner, proxy and culler, each its own process."""
