# NixOS VM test: the module brings the gateway up (local KEK from a credential), it reports
# ready to systemd, answers /ready, takes a backup, and stops cleanly.
{ pkgs, module, package }:

pkgs.testers.nixosTest {
  name = "peat-gateway";

  nodes.kit = { pkgs, ... }: {
    imports = [ module ];
    environment.systemPackages = [ pkgs.curl package ];
    environment.etc."peat/kek".text = "a0a1a2a3a4a5a6a7a8a9aaabacadaeafb0b1b2b3b4b5b6b7b8b9babbbcbdbebf";
    environment.etc."peat/admin-token".text = "vm-test-admin-token-0123456789";
    services.peat-gateway = {
      enable = true;
      inherit package;
      keyProvider = "local";
      credentials = {
        peat-kek = "/etc/peat/kek";
        peat-admin-token = "/etc/peat/admin-token";
      };
    };
  };

  testScript = ''
    kit.wait_for_unit("peat-gateway.service")
    kit.wait_until_succeeds("curl -sf http://127.0.0.1:8080/ready")
    kit.succeed("systemctl show peat-gateway -p StatusText | grep -q 'serving; backlog'")
    kit.succeed(
      "PEAT_ADMIN_TOKEN=vm-test-admin-token-0123456789 peat-gateway backup --out /tmp/kit.pgbk"
    )
    kit.succeed("systemctl stop peat-gateway")
    kit.succeed("systemctl show peat-gateway -p Result | grep -q success")
  '';
}
