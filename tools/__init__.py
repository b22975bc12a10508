"""Around the served repository: the client side (`client`), the local server (`server`), evaluations
(`evaluate`) and the Kubernetes render (`k8s`). Each imports only the ones before it."""
