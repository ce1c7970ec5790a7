# NixOS module: services.peat-gateway. Options mirror the gateway's settings (`settings` is the
# TOML file, every key of the README's second column); secrets go in as systemd credentials
# (`credentials.<name> = path`, referred to as `credential:<name>`), never into the Nix store.
{ config, lib, pkgs, ... }:

let
  cfg = config.services.peat-gateway;
  toml = pkgs.formats.toml { };
  settings = cfg.settings // {
    bind = "${cfg.address}:${toString cfg.port}";
    data_dir = "/var/lib/peat-gateway";
  } // lib.optionalAttrs (cfg.keyProvider != null) { key_provider = cfg.keyProvider; };
  configFile = toml.generate "peat-gateway.toml" settings;
in
{
  options.services.peat-gateway = {
    enable = lib.mkEnableOption "peat-gateway, change capture and formation authority for a Peat mesh";

    package = lib.mkOption {
      type = lib.types.package;
      default = pkgs.callPackage ./package.nix { };
      description = "The peat-gateway package.";
    };

    address = lib.mkOption {
      type = lib.types.str;
      default = "0.0.0.0";
      description = "Address the API and the operator UI listen on.";
    };

    port = lib.mkOption {
      type = lib.types.port;
      default = 8080;
      description = "Port of the API and the operator UI (below 1024 grants CAP_NET_BIND_SERVICE).";
    };

    keyProvider = lib.mkOption {
      type = lib.types.nullOr (lib.types.enum [ "tpm" "vault" "aws-kms" "local" ]);
      default = "tpm";
      description = "Where the key-encryption key lives. `tpm` enables the TPM 2.0 stack.";
    };

    settings = lib.mkOption {
      type = toml.type;
      default = { };
      example = { cdc_outbox_max_mb = 2048; audit_retention_days = 365; };
      description = "Gateway settings (the TOML file's keys, see the README). Never secrets: use `credentials`.";
    };

    credentials = lib.mkOption {
      type = lib.types.attrsOf lib.types.path;
      default = { };
      example = { peat-admin-token = "/run/keys/peat-admin-token"; };
      description = ''
        Secrets loaded with LoadCredential= (name -> file outside the Nix store). The
        well-known names set their setting: `peat-admin-token` (PEAT_ADMIN_TOKEN),
        `peat-kek` (PEAT_KEK), `peat-tpm-auth` (PEAT_TPM_AUTH), `peat-vault-token` (PEAT_VAULT_TOKEN).
      '';
    };

    openFirewall = lib.mkOption {
      type = lib.types.bool;
      default = false;
      description = "Open the API port in the firewall.";
    };
  };

  config = lib.mkIf cfg.enable {
    security.tpm2.enable = lib.mkIf (cfg.keyProvider == "tpm") true;

    users.groups.peat-gateway = { };
    users.users.peat-gateway = {
      isSystemUser = true;
      group = "peat-gateway";
      extraGroups = lib.optional (cfg.keyProvider == "tpm") "tss";
      home = "/var/lib/peat-gateway";
    };

    networking.firewall.allowedTCPPorts = lib.optional cfg.openFirewall cfg.port;

    systemd.services.peat-gateway = {
      description = "peat-gateway: durable change capture and formation authority for a Peat mesh";
      wantedBy = [ "multi-user.target" ];
      after = [ "network-online.target" ] ++ lib.optional (cfg.keyProvider == "tpm") "tpm2.target";
      wants = [ "network-online.target" ];
      environment =
        let
          known = {
            peat-admin-token = "PEAT_ADMIN_TOKEN";
            peat-kek = "PEAT_KEK";
            peat-tpm-auth = "PEAT_TPM_AUTH";
            peat-vault-token = "PEAT_VAULT_TOKEN";
          };
        in
        lib.mapAttrs' (name: var: lib.nameValuePair var "credential:${name}")
          (lib.filterAttrs (name: _: cfg.credentials ? ${name}) known);
      serviceConfig = {
        Type = "notify";
        NotifyAccess = "main";
        ExecStart = "${lib.getExe cfg.package} serve --config ${configFile}";
        WatchdogSec = 30;
        Restart = "on-failure";
        RestartSec = 2;
        TimeoutStartSec = 90;
        User = "peat-gateway";
        Group = "peat-gateway";
        StateDirectory = "peat-gateway";
        StateDirectoryMode = "0700";
        UMask = "0077";
        LoadCredential = lib.mapAttrsToList (name: path: "${name}:${path}") cfg.credentials;
        CapabilityBoundingSet = lib.optional (cfg.port < 1024) "CAP_NET_BIND_SERVICE";
        AmbientCapabilities = lib.optional (cfg.port < 1024) "CAP_NET_BIND_SERVICE";
        NoNewPrivileges = true;
        ProtectSystem = "strict";
        ProtectHome = true;
        PrivateTmp = true;
        PrivateMounts = true;
        DeviceAllow = lib.optional (cfg.keyProvider == "tpm") "/dev/tpmrm0 rw";
        DevicePolicy = "closed";
        ProtectKernelTunables = true;
        ProtectKernelModules = true;
        ProtectKernelLogs = true;
        ProtectControlGroups = true;
        ProtectClock = true;
        ProtectHostname = true;
        ProtectProc = "invisible";
        ProcSubset = "pid";
        RestrictNamespaces = true;
        RestrictRealtime = true;
        RestrictSUIDSGID = true;
        LockPersonality = true;
        MemoryDenyWriteExecute = true;
        RestrictAddressFamilies = [ "AF_INET" "AF_INET6" "AF_UNIX" ];
        SystemCallArchitectures = "native";
        SystemCallFilter = [ "@system-service" "~@privileged @resources" ];
        MemoryMax = "128M";
        TasksMax = 64;
      };
    };
  };
}
