import Foundation
import Testing

@testable import SluiceServer

/// `billing_export:` in the file, secrets only from the environment.
@Suite("Billing export settings")
struct BillingExportSettingsTests {
    @Test func exportersAreOnWhenConfiguredAndNeedTheirSecrets() throws {
        let yaml = """
            billing_export:
              interval_seconds: 30
              stripe: {url: "http://127.0.0.1:12111", event_name: llm_cost, value: tokens}
              openmeter: {url: "http://127.0.0.1:12112", event_type: llm.usage}

            """
        let configuration = try RedisSettingsTests.load(yaml, environment: [
            "SLUICE_STRIPE_SECRET_KEY": "sk_test_x", "SLUICE_OPENMETER_TOKEN": "om_x",
        ])
        #expect(configuration.billingExport.intervalSeconds == 30)
        #expect(configuration.billingExport.stripe?.eventName == "llm_cost" && configuration.billingExport.stripe?.value == "tokens")
        #expect(configuration.billingExport.stripe?.secretKey == "sk_test_x")
        #expect(configuration.billingExport.openMeter?.eventType == "llm.usage" && configuration.billingExport.openMeter?.token == "om_x")
        #expect(try RedisSettingsTests.load("").billingExport.stripe == nil)

        for (yaml, environment, key) in [
            ("billing_export: {stripe: {}}\n", [:], "SLUICE_STRIPE_SECRET_KEY"),
            ("billing_export: {openmeter: {}}\n", [:], "SLUICE_OPENMETER_TOKEN"),
            ("billing_export: {stripe: {value: dollars}}\n", ["SLUICE_STRIPE_SECRET_KEY": "k"], "billing_export.stripe.value"),
            ("billing_export: {stripe: {secret_key: sk_live_in_the_file}}\n", ["SLUICE_STRIPE_SECRET_KEY": "k"], "billing_export.stripe.secret_key"),
        ] as [(String, [String: String], String)] {
            do {
                _ = try RedisSettingsTests.load(yaml, environment: environment)
                Issue.record("\(yaml) was accepted")
            } catch {
                #expect(error.key == key, "\(yaml): \(error)")
            }
        }
    }
}
