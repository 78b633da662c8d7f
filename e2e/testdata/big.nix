# One large incompressible output, for the upload resume test.
{ nonce ? "0", mib ? "256" }:
derivation {
  name = "gbc-big";
  inherit nonce;
  system = builtins.currentSystem;
  builder = "/bin/sh";
  args = [ "-e" "-c" "head -c ${mib}M /dev/urandom > $out" ];
  PATH = "/usr/bin:/bin";
}
