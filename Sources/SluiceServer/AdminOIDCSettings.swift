import Foundation
import SluiceAdminAPI

extension OIDCSettings {
    /// The `admin_oidc:` section:
    /// ```yaml
    /// admin_oidc:
    ///   issuer: https://login.example.com/realms/ops   # exactly as tokens say it
    ///   audience: sluice-admin
    ///   roles_claim: groups                            # a string or list of strings
    ///   roles: {sluice-operators: platform_admin, acme-admins: tenant_admin, acme-staff: tenant_viewer}
    ///   tenant_claim: sluice_tenant                     # the tenant roles' tenant id
    ///   leeway_seconds: 60
    ///   ui_client_id: sluice-admin-ui                 # the web UI's public client (default: audience)
    ///   ui_scope: openid profile groups
    /// ```
    static func read(_ section: ConfigReader) throws(ConfigurationError) -> OIDCSettings {
        try section.allow(["issuer", "audience", "roles_claim", "roles", "tenant_claim", "leeway_seconds",
                           "refresh_interval_seconds", "ui_client_id", "ui_scope"])
        guard let issuer = try section.string("issuer"), let url = URL(string: issuer),
              ["https", "http"].contains(url.scheme?.lowercased() ?? ""), url.host?.isEmpty == false else {
            throw ConfigurationError(key: section.key("issuer"), problem: "must be the provider's http(s) issuer URL")
        }
        guard let audience = try section.string("audience"), !audience.isEmpty else {
            throw ConfigurationError(key: section.key("audience"), problem: "is required")
        }
        var settings = OIDCSettings(issuer: issuer, audience: audience)
        if let value = try section.string("roles_claim"), !value.isEmpty { settings.rolesClaim = value }
        if let value = try section.string("tenant_claim"), !value.isEmpty { settings.tenantClaim = value }
        if let value = try section.int("leeway_seconds", 0...600) { settings.leeway = .seconds(value) }
        if let value = try section.int("refresh_interval_seconds", 1...86_400) { settings.refreshInterval = .seconds(value) }
        if let value = try section.string("ui_client_id"), !value.isEmpty { settings.uiClientID = value }
        if let value = try section.string("ui_scope"), !value.isEmpty { settings.uiScope = value }
        guard let roles = try section.mapping("roles"), !roles.values.isEmpty else {
            throw ConfigurationError(key: section.key("roles"), problem: "must map at least one claim value to a role")
        }
        for name in roles.values.keys.sorted() {
            guard let text = try roles.string(name), let role = AdminRole(rawValue: text) else {
                throw ConfigurationError(key: roles.key(name), problem: "must be platform_admin, tenant_admin or tenant_viewer")
            }
            settings.roles[name] = role
        }
        return settings
    }
}
