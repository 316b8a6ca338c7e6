package bench.peer;

import java.io.IOException;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.time.Duration;
import java.util.concurrent.CompletionException;
import java.util.concurrent.ThreadLocalRandom;
import java.util.concurrent.atomic.AtomicLong;

/** POSTs calls to Iterable (or the emulator), retrying 408, 429, 5xx and network errors. */
final class Sender {
    private static final long BACKOFF_MS = 20;
    private static final long BACKOFF_CAP_MS = 1_000;

    private final HttpClient http;
    private final String base;
    private final String apiKey;
    final AtomicLong sent = new AtomicLong();
    final AtomicLong retried = new AtomicLong();
    final AtomicLong refused = new AtomicLong();

    Sender(String url, String apiKey) {
        // HTTP/1.1: a cleartext HTTP/2 upgrade attempt buys nothing against the emulator.
        this.http = HttpClient.newBuilder()
                .version(HttpClient.Version.HTTP_1_1)
                .connectTimeout(Duration.ofSeconds(5))
                .build();
        this.base = url.endsWith("/") ? url + "api/" : url + "/api/";
        this.apiKey = apiKey;
    }

    /** Sends one call until Iterable accepts or refuses it; a refusal (4xx) is counted. */
    void send(Translate.Call call) throws InterruptedException {
        HttpRequest request = HttpRequest.newBuilder(URI.create(base + call.endpoint()))
                .timeout(Duration.ofSeconds(30))
                .header("Api-Key", apiKey)
                .header("Content-Type", "application/json")
                .POST(HttpRequest.BodyPublishers.ofByteArray(call.body()))
                .build();
        for (int attempt = 0; ; attempt++) {
            int status;
            try {
                status = http.sendAsync(request, HttpResponse.BodyHandlers.discarding())
                        .join()
                        .statusCode();
            } catch (CompletionException e) {
                if (!(e.getCause() instanceof IOException)) {
                    throw e;
                }
                status = -1; // a network error or timeout
            }
            if (status >= 200 && status < 300) {
                sent.incrementAndGet();
                return;
            }
            if (status != -1 && status != 408 && status != 429 && status < 500) {
                refused.incrementAndGet(); // the service would dead-letter it
                return;
            }
            retried.incrementAndGet();
            long cap = Math.min(BACKOFF_CAP_MS, BACKOFF_MS << Math.min(attempt, 10));
            Thread.sleep(ThreadLocalRandom.current().nextLong(cap + 1)); // full jitter
        }
    }
}
