"""What a user needs to test against etcd: local etcd processes and clusters, etcd in Docker,
a fault proxy, and the history checker. Apart from the product: ``import lessor`` and
``import lessor.etcd`` load none of it."""
