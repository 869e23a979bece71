import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import SluiceAdminAPI
import Testing

/// The admin UI's files and their headers (the browser test in Tests/sdk drives the pages).
@Suite("Admin web UI")
struct AdminUITests {
    private func withUI(_ ui: AdminUI, _ body: @Sendable (any TestClientProtocol) async throws -> Void) async throws {
        let router = Router(context: AdminRequestContext.self)
        ui.addRoutes(to: router)
        try await Application(router: router).test(.router, body)
    }

    @Test func theFilesAreServedUnderAPolicyThatAllowsNoInlineScriptOrFraming() async throws {
        try await withUI(AdminUI(oidc: nil)) { client in
            for (path, type) in [("/admin/ui", "text/html"), ("/admin/ui/", "text/html"), ("/admin/ui/app.js", "text/javascript"),
                                 ("/admin/ui/app.css", "text/css")] {
                try await client.execute(uri: path, method: .get) { response in
                    #expect(response.status == .ok, "\(path)")
                    #expect(response.headers[.contentType]?.hasPrefix(type) == true, "\(path)")
                    let policy = response.headers[.contentSecurityPolicy] ?? ""
                    #expect(policy.contains("script-src 'self'") && !policy.contains("unsafe-inline"), "\(policy)")
                    #expect(policy.contains("connect-src 'self';") && policy.contains("frame-ancestors 'none'"), "\(policy)")
                }
            }
            try await client.execute(uri: "/admin/ui/settings.json", method: .get) { response in
                #expect(String(buffer: response.body) == #"{"oidc":null}"#)
            }
        }
    }

    @Test func withOIDCTheSettingsNameTheProviderAndThePolicyLetsThePageCallIt() async throws {
        var settings = OIDCSettings(issuer: "https://login.example.com:8443/realms/ops", audience: "sluice-admin")
        settings.uiScope = "openid groups"
        try await withUI(AdminUI(oidc: AdminUI.OIDCClient(settings))) { client in
            try await client.execute(uri: "/admin/ui/settings.json", method: .get) { response in
                let json = try JSONSerialization.jsonObject(with: Data(String(buffer: response.body).utf8)) as? [String: Any]
                let oidc = json?["oidc"] as? [String: String]
                #expect(oidc == ["issuer": "https://login.example.com:8443/realms/ops", "client_id": "sluice-admin",
                                 "scope": "openid groups"])
                #expect(response.headers[.contentSecurityPolicy]?.contains("connect-src 'self' https://login.example.com:8443;") == true)
            }
        }
    }
}
