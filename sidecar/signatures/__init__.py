"""HTTP Message Signatures (RFC 9421) and Content-Digest (RFC 9530).

Modules, from pure to I/O:

- ``components``: component identifiers (name + parameters), parsing and serialisation.
- ``base``: message views and the signature base builder (pure).
- ``fields``: ``Signature-Input`` / ``Signature`` parsing with ``http_sf`` (RFC 9651).
- ``digest``: ``Content-Digest`` generation and verification.
- ``algorithms``: the six RFC 9421 algorithms over ``cryptography``, key loading.
- ``signer``: building ``Signature-Input`` / ``Signature`` for a message; ``ResponseSigner``.
- ``nonces``: replay stores (memory, Redis).
- ``verifier``: ``SignatureStage``, the pipeline's step 6.

The package ``__init__`` imports nothing so that ``sidecar.config`` can use the pure
modules without an import cycle; import from the submodules.
"""
