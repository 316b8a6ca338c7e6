package bench.peer;

import com.fasterxml.jackson.databind.ObjectMapper;
import io.confluent.parallelconsumer.ParallelConsumerOptions;
import io.confluent.parallelconsumer.ParallelConsumerOptions.CommitMode;
import io.confluent.parallelconsumer.ParallelConsumerOptions.ProcessingOrder;
import io.confluent.parallelconsumer.ParallelStreamProcessor;
import java.io.IOException;
import java.time.Duration;
import java.util.Arrays;
import java.util.HashMap;
import java.util.Map;
import java.util.Properties;
import java.util.concurrent.CountDownLatch;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.common.serialization.ByteArrayDeserializer;
import org.apache.kafka.common.serialization.StringDeserializer;

/**
 * The bench's peer: Confluent Parallel Consumer in KEY order, 64 records at a time, each
 * sent to Iterable with java.net.http, offsets committed by the consumer once processed.
 *
 * <pre>java -jar target/peer.jar --bootstrap HOST:PORT --group G --topics a,b,c \
 *     --url http://127.0.0.1:PORT --api-key KEY [--concurrency 64]</pre>
 *
 * Runs until SIGTERM, then drains, commits, and prints one JSON line of counts.
 */
public final class Peer {
    private Peer() {}

    public static void main(String[] argv) throws InterruptedException {
        Map<String, String> args = arguments(argv);
        Properties kafka = new Properties();
        kafka.put(ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, args.get("bootstrap"));
        kafka.put(ConsumerConfig.GROUP_ID_CONFIG, args.get("group"));
        kafka.put(ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, false); // PC commits what it finished
        kafka.put(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG, "earliest");
        // String keys: KEY order compares keys with equals(), which byte[] does not define.
        kafka.put(ConsumerConfig.KEY_DESERIALIZER_CLASS_CONFIG, StringDeserializer.class);
        kafka.put(ConsumerConfig.VALUE_DESERIALIZER_CLASS_CONFIG, ByteArrayDeserializer.class);

        ParallelConsumerOptions<String, byte[]> options = ParallelConsumerOptions.<String, byte[]>builder()
                .ordering(ProcessingOrder.KEY)
                .maxConcurrency(Integer.parseInt(args.getOrDefault("concurrency", "64")))
                .commitMode(CommitMode.PERIODIC_CONSUMER_ASYNCHRONOUS)
                .commitInterval(Duration.ofSeconds(1)) // as the service's bench runs
                .consumer(new KafkaConsumer<>(kafka))
                .build();
        Translate translate = new Translate(new ObjectMapper());
        Sender sender = new Sender(args.get("url"), args.get("api-key"));
        ParallelStreamProcessor<String, byte[]> processor =
                ParallelStreamProcessor.createEosStreamProcessor(options);
        processor.subscribe(Arrays.asList(args.get("topics").split(",")));
        processor.poll(context -> {
            try {
                for (Translate.Call call : translate.calls(context.value())) {
                    sender.send(call);
                }
            } catch (IOException e) { // not JSON: nothing to send (the service dead-letters it)
                sender.refused.incrementAndGet();
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
                throw new IllegalStateException("interrupted while sending", e);
            }
        });

        CountDownLatch closed = new CountDownLatch(1);
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            processor.closeDrainFirst();
            System.out.printf("{\"sent\": %d, \"retried\": %d, \"refused\": %d}%n",
                    sender.sent.get(), sender.retried.get(), sender.refused.get());
            closed.countDown();
        }));
        closed.await();
    }

    private static Map<String, String> arguments(String[] argv) {
        Map<String, String> args = new HashMap<>();
        for (int i = 0; i < argv.length; i++) {
            String arg = argv[i].replaceFirst("^--", "");
            int eq = arg.indexOf('=');
            if (eq >= 0) {
                args.put(arg.substring(0, eq), arg.substring(eq + 1));
            } else if (i + 1 < argv.length) {
                args.put(arg, argv[++i]);
            }
        }
        for (String required : new String[] {"bootstrap", "group", "topics", "url", "api-key"}) {
            if (!args.containsKey(required)) {
                throw new IllegalArgumentException("--" + required + " is required");
            }
        }
        return args;
    }
}
