import Foundation
import SluiceMockUpstream
import SluiceTenancy
import SluiceTestSupport
import Testing

@testable import SluiceServer

/// The gateway in front of mocks that answer as vLLM, TensorRT-LLM and the Dynamo frontend do:
/// usage is metered right whatever the stream looks like, and refusals reach the client in
/// OpenAI's shape.
@Suite("Backends by server profile")
struct BackendProfileTests {
    @Test(arguments: [ServerProfile.vllm, .trtllm, .dynamo])
    func usageIsMeteredAndRefusalsAreOpenAIShaped(profile: ServerProfile) async throws {
        var behavior = MockUpstreamBehavior()
        behavior.profile = profile
        behavior.completionTokens = 6
        behavior.contextLength = 400
        behavior.cachedPromptTokens = 4
        try await withThrowingTaskGroup(of: Void.self) { group in
            let port = try await GatewayHarness.startMock(behavior, in: &group)
            let model = "profile-\(profile.rawValue)"
            try await GatewayHarness.run(models: [model], configure: { configuration in
                configuration.models.append(.init(name: model, backends: [.init(url: "http://127.0.0.1:\(port)")]))
            }) { gateway in
                let whole = try await gateway.chat(model: model)
                #expect(whole.status == 200, "\(whole.body)")
                let streamed = try await gateway.chat(model: model, stream: true)
                #expect(streamed.status == 200 && streamed.body.hasSuffix("data: [DONE]\n\n"), "\(streamed.body)")
                // The gateway asked for usage; the client did not, so it gets no usage chunk (vLLM's
                // `"usage": null` on each chunk passes, as OpenAI's own would with include_usage).
                #expect(!streamed.body.contains("\"usage\":{"), "\(profile): \(streamed.body)")
                let asked = try await gateway.chat(model: model, stream: true, extra: #", "stream_options": {"include_usage": true}"#)
                #expect(asked.body.contains("\"completion_tokens\":6"), "the client asked: it keeps the usage chunk")

                // A prompt over the context: the backend's refusal, in OpenAI's shape.
                let long = String(repeating: "word ", count: 400)
                let refused = try await gateway.post("/v1/chat/completions", body: """
                    {"model": "\(model)", "messages": [{"role": "user", "content": "\(long)"}], "max_tokens": 10}
                    """)
                #expect(refused.status == 400, "\(refused.body)")
                let error = refused.json["error"] as? [String: Any]
                #expect(error?["code"] as? String == "context_length_exceeded", "\(profile): \(refused.body)")
                #expect(error?["type"] as? String == "invalid_request_error")
                #expect((error?["message"] as? String)?.contains("context length") == true)

                // Four requests reached a backend; the refusal's row books nothing.
                let rows = try await GatewayHardeningTests.ledger(tenant: gateway.tenant.id, atLeast: 4)
                let answered = rows.filter { $0.completion > 0 }
                #expect(rows.count == 4 && answered.count == 3, "\(profile): \(rows)")
                for row in answered {
                    #expect(row.completion == 6 && row.cached == 4 && row.source == "backend", "\(profile): \(row)")
                }
                #expect(rows.filter { $0.completion == 0 }.allSatisfy { $0.prompt == 0 && $0.cached == 0 }, "\(rows)")
            }
            group.cancelAll()
        }
    }
}

/// `list_models_from_backends`: the model list follows what the backends serve.
@Suite("Model list from the backends")
struct BackendModelListTests {
    static func listed(_ gateway: GatewayHarness) async throws -> [[String: Any]] {
        let response = try await RawHTTPClient.request(port: gateway.publicPort, method: "GET", path: "/v1/models",
                                                       headers: [("authorization", "Bearer \(gateway.key)")])
        return response.json["data"] as? [[String: Any]] ?? []
    }

    @Test func onlyModelsABackendServesAreListedWithItsDetails() async throws {
        // Every harness mock says it serves "mock-model" (owned by "mock"), whatever it is routed as.
        try await GatewayHarness.run(configure: { configuration in
            configuration.listModelsFromBackends = true
            configuration.backendModelsRefresh = .milliseconds(100)
        }) { gateway in
            var listed: [[String: Any]] = []
            for _ in 0..<100 {
                listed = try await Self.listed(gateway)
                if listed.first?["owned_by"] as? String == "mock" { break }
                try await Task.sleep(for: .milliseconds(50))
            }
            #expect(listed.compactMap { $0["id"] as? String } == ["mock-model"],
                    "slow-model and the rest are routed to backends that do not serve them by that name: \(listed)")
            #expect(listed.first?["owned_by"] as? String == "mock")
        }
        // Off (the default): every configured model the key may use.
        try await GatewayHarness.run { gateway in
            let ids = try await Self.listed(gateway).compactMap { $0["id"] as? String }
            #expect(ids == ["dead-model", "dying-model", "hung-model", "mock-model", "paced-model", "slow-model"], "\(ids)")
        }
    }
}
