"""PCloud's etcd: the v3 JSON gateway client (`gateway`), one member's certificate and
flags (`member`) and the cluster's membership (`cluster`). The server's store talks to etcd
through `gateway`; the backend's HA jobs run members and change membership with the rest."""
