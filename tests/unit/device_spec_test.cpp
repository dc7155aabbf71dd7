#include <gtest/gtest.h>

#include "app/device_spec.hpp"

using namespace vhostd::app;

TEST(DeviceSpec, FileWithAllOptions) {
    auto r = parse_blk_spec("socket=/tmp/a.sock,path=/tmp/disk.img,queues=4,readonly=on,direct=on,block-size=4096,serial=abc");
    ASSERT_TRUE(r.ok()) << r.error().describe();
    EXPECT_EQ(r->socket, "/tmp/a.sock");
    EXPECT_EQ(r->path, "/tmp/disk.img");
    EXPECT_EQ(r->queues, 4u);
    EXPECT_TRUE(r->readonly);
    EXPECT_TRUE(r->direct);
    EXPECT_EQ(r->block_size, 4096u);
    EXPECT_EQ(r->serial, "abc");
    EXPECT_FALSE(r->client);
}

TEST(DeviceSpec, NullBackendAndDefaults) {
    auto r = parse_blk_spec("socket=/tmp/n.sock,backend=null,size=1G");
    ASSERT_TRUE(r.ok()) << r.error().describe();
    EXPECT_EQ(r->backend, "null");
    EXPECT_EQ(r->size, 1ull << 30);
    EXPECT_EQ(r->queues, kDefaultQueues);
}

TEST(DeviceSpec, Rejections) {
    EXPECT_FALSE(parse_blk_spec("path=/x").ok());                             // no socket
    EXPECT_FALSE(parse_blk_spec("socket=/s").ok());                           // no path
    EXPECT_FALSE(parse_blk_spec("socket=/s,backend=null").ok());              // no size
    EXPECT_FALSE(parse_blk_spec("socket=/s,path=/x,queues=0").ok());
    EXPECT_FALSE(parse_blk_spec("socket=/s,path=/x,block-size=1024").ok());
    EXPECT_FALSE(parse_blk_spec("socket=/s,path=/x,bogus=1").ok());
    EXPECT_FALSE(parse_blk_spec("socket=/s,path=/x,readonly=maybe").ok());
    EXPECT_FALSE(parse_blk_spec("socket=/s,path=/x,path=/y").ok());
    EXPECT_FALSE(parse_blk_spec("socket=/s,path=/x,serial=012345678901234567890").ok());
    EXPECT_FALSE(parse_blk_spec("socket=/s,backend=tape,path=/x").ok());
    EXPECT_FALSE(parse_blk_spec("socket=/s,path=/x,submit-batch=0").ok());
    EXPECT_FALSE(parse_blk_spec("socket=/s,path=/x,submit-batch=257").ok());
    EXPECT_FALSE(parse_blk_spec("socket=/s,backend=null,size=1G,submit-batch=4").ok());  // file backend only
}

TEST(DeviceSpec, NvmeBackend) {
    auto r = parse_blk_spec("socket=/s,backend=nvme,path=/dev/ng0n1,queues=4,readonly=on");
    ASSERT_TRUE(r.ok()) << r.error().describe();
    EXPECT_EQ(r->backend, "nvme");
    EXPECT_EQ(r->path, "/dev/ng0n1");
    EXPECT_EQ(r->queues, 4u);
    // The spec survives a round trip (a config document, device_list).
    auto again = parse_blk_keys(to_keys(*r));
    ASSERT_TRUE(again.ok()) << again.error().describe();
    EXPECT_EQ(again->backend, "nvme");
    EXPECT_EQ(again->path, "/dev/ng0n1");
    EXPECT_FALSE(parse_blk_spec("socket=/s,backend=nvme").ok());                          // no path
    EXPECT_FALSE(parse_blk_spec("socket=/s,backend=nvme,path=/dev/ng0n1,size=1G").ok());
    EXPECT_FALSE(parse_blk_spec("socket=/s,backend=nvme,path=/dev/ng0n1,block-size=4096").ok());  // the LBA's
    EXPECT_FALSE(parse_blk_spec("socket=/s,backend=nvme,path=/dev/ng0n1,direct=on").ok());
    EXPECT_FALSE(parse_blk_spec("socket=/s,backend=nvme,path=/dev/ng0n1,uri=nbd://h/e").ok());
    // Fixed buffers: nvme only, and kept by the round trip.
    EXPECT_FALSE(r->fixed);
    auto f = parse_blk_spec("socket=/s,backend=nvme,path=/dev/ng0n1,fixed=on");
    ASSERT_TRUE(f.ok()) << f.error().describe();
    EXPECT_TRUE(f->fixed);
    auto f2 = parse_blk_keys(to_keys(*f));
    ASSERT_TRUE(f2.ok());
    EXPECT_TRUE(f2->fixed);
    EXPECT_FALSE(parse_blk_spec("socket=/s,path=/x,fixed=on").ok());
    EXPECT_FALSE(parse_blk_spec("socket=/s,backend=nvme,path=/dev/ng0n1,fixed=maybe").ok());
}

TEST(DeviceSpec, NbdBackend) {
    auto r = parse_blk_spec("socket=/s,backend=nbd,uri=nbd://127.0.0.1:10809/disk,timeout=5,queues=2");
    ASSERT_TRUE(r.ok()) << r.error().describe();
    EXPECT_EQ(r->uri, "nbd://127.0.0.1:10809/disk");
    EXPECT_EQ(r->timeout, 5u);
    EXPECT_TRUE(r->timeout_set);
    auto d = parse_blk_spec("socket=/s,backend=nbd,uri=nbd+unix:///?socket=/tmp/x.sock");
    ASSERT_TRUE(d.ok()) << d.error().describe();
    EXPECT_EQ(d->uri, "nbd+unix:///?socket=/tmp/x.sock");  // '=' inside a value is kept
    EXPECT_FALSE(d->timeout_set);
    EXPECT_FALSE(parse_blk_spec("socket=/s,backend=nbd").ok());                        // no uri
    EXPECT_FALSE(parse_blk_spec("socket=/s,backend=nbd,uri=nbd://h/e,path=/x").ok());  // not a file
    EXPECT_FALSE(parse_blk_spec("socket=/s,backend=nbd,uri=nbd://h/e,size=1G").ok());
    EXPECT_FALSE(parse_blk_spec("socket=/s,backend=nbd,uri=nbd://h/e,timeout=-1").ok());
    EXPECT_FALSE(parse_blk_spec("socket=/s,backend=nbd,uri=nbd://h/e,timeout=86401").ok());
    EXPECT_FALSE(parse_blk_spec("socket=/s,path=/x,uri=nbd://h/e").ok());   // uri= is nbd's
    EXPECT_FALSE(parse_blk_spec("socket=/s,path=/x,timeout=3").ok());       // so is timeout=
}

TEST(DeviceSpec, RbdBackend) {
    auto r = parse_blk_spec("socket=/s,backend=rbd,pool=vms,image=disk1,conf=/etc/ceph/x.conf,user=vhostd,timeout=7");
    ASSERT_TRUE(r.ok()) << r.error().describe();
    EXPECT_EQ(r->pool, "vms");
    EXPECT_EQ(r->image, "disk1");
    EXPECT_EQ(r->conf, "/etc/ceph/x.conf");
    EXPECT_EQ(r->user, "vhostd");
    EXPECT_EQ(r->timeout, 7u);
    EXPECT_FALSE(parse_blk_spec("socket=/s,backend=rbd,pool=p").ok());                 // no image
    EXPECT_FALSE(parse_blk_spec("socket=/s,backend=rbd,image=i").ok());                // no pool
    EXPECT_FALSE(parse_blk_spec("socket=/s,backend=rbd,pool=p/x,image=i").ok());       // no '/' in names
    EXPECT_FALSE(parse_blk_spec("socket=/s,backend=rbd,pool=p,image=i@s").ok());       // snap= for that
    EXPECT_FALSE(parse_blk_spec("socket=/s,backend=rbd,pool=p,image=i,path=/x").ok());
    EXPECT_FALSE(parse_blk_spec("socket=/s,path=/x,pool=p").ok());                     // rbd keys are rbd's
}

TEST(DeviceSpec, SubmitBatch) {
    auto r = parse_blk_spec("socket=/s,path=/x,submit-batch=16");
    ASSERT_TRUE(r.ok()) << r.error().describe();
    EXPECT_EQ(r->submit_batch, 16u);
    auto d = parse_blk_spec("socket=/s,path=/x");
    ASSERT_TRUE(d.ok());
    EXPECT_EQ(d->submit_batch, 0u);  // the backend's default
}

TEST(DeviceSpec, SizesAndCpus) {
    EXPECT_EQ(parse_size("4k").value(), 4096u);
    EXPECT_EQ(parse_size("3M").value(), 3u << 20);
    EXPECT_EQ(parse_size("512").value(), 512u);
    EXPECT_FALSE(parse_size("").ok());
    EXPECT_FALSE(parse_size("99999999999999T").ok());
    EXPECT_FALSE(parse_size("1X").ok());
    auto c = parse_cpu_list("0,2-4");
    ASSERT_TRUE(c.ok());
    EXPECT_EQ(c.value(), (std::vector<int>{0, 2, 3, 4}));
    EXPECT_FALSE(parse_cpu_list("3-1").ok());
    EXPECT_FALSE(parse_cpu_list("a").ok());
}

namespace vhostd::app {
namespace {

TEST(NetSpec, ParsesAllKeys) {
    auto s = parse_net_spec("socket=/tmp/n.sock,tap=vt0,queues=4,mac=52:54:00:AB:cd:01,mtu=9000,client=on");
    ASSERT_TRUE(s.ok()) << s.error().describe();
    EXPECT_EQ(s.value().socket, "/tmp/n.sock");
    EXPECT_EQ(s.value().tap, "vt0");
    EXPECT_EQ(s.value().queue_pairs, 4u);
    EXPECT_TRUE(s.value().mac_set);
    EXPECT_EQ(s.value().mac, (std::array<uint8_t, 6>{0x52, 0x54, 0x00, 0xab, 0xcd, 0x01}));
    EXPECT_EQ(s.value().mtu, 9000u);
    EXPECT_TRUE(s.value().client);
    auto d = parse_net_spec("socket=/tmp/n.sock,tap=vt0");
    ASSERT_TRUE(d.ok());
    EXPECT_EQ(d.value().queue_pairs, 1u);
    EXPECT_FALSE(d.value().mac_set);
    EXPECT_EQ(d.value().mtu, 0u);
}

TEST(NetSpec, RejectsBadInput) {
    for (const char* bad : {"tap=vt0", "socket=/s", "socket=/s,tap=", "socket=/s,tap=0123456789abcdef",
                            "socket=/s,tap=a/b", "socket=/s,tap=vt0,queues=0", "socket=/s,tap=vt0,queues=33",
                            "socket=/s,tap=vt0,mac=52:54:00:12:34", "socket=/s,tap=vt0,mac=52-54-00-12-34-56",
                            "socket=/s,tap=vt0,mac=01:00:5e:00:00:01", "socket=/s,tap=vt0,mac=00:00:00:00:00:00",
                            "socket=/s,tap=vt0,mac=52:54:00:12:34:zz", "socket=/s,tap=vt0,mtu=67",
                            "socket=/s,tap=vt0,mtu=65518", "socket=/s,tap=vt0,path=/x", "socket=/s,tap=vt0,tap=vt1"}) {
        EXPECT_FALSE(parse_net_spec(bad).ok()) << bad;
    }
}

}  // namespace
}  // namespace vhostd::app

TEST(DeviceSpec, IdsAndQosKeys) {
    auto r = parse_blk_spec("id=disk-1,socket=/s,path=/x,iops=5000,bps=50M,read-iops=100,write-bps=1G,burst-ms=250");
    ASSERT_TRUE(r.ok()) << r.error().describe();
    EXPECT_EQ(r->id, "disk-1");
    EXPECT_EQ(r->qos.iops, 5000u);
    EXPECT_EQ(r->qos.bps, 50ull << 20);
    EXPECT_EQ(r->qos.read_iops, 100u);
    EXPECT_EQ(r->qos.write_bps, 1ull << 30);
    EXPECT_EQ(r->qos.burst_ms, 250u);
    EXPECT_FALSE(parse_blk_spec("id=,socket=/s,path=/x").ok());
    EXPECT_FALSE(parse_blk_spec("id=a/b,socket=/s,path=/x").ok());
    EXPECT_FALSE(parse_blk_spec("id=" + std::string(65, 'a') + ",socket=/s,path=/x").ok());
    EXPECT_FALSE(parse_blk_spec("socket=/s,path=/x,iops=-1").ok());
    EXPECT_FALSE(parse_blk_spec("socket=/s,path=/x,iops=1000000000").ok());
    EXPECT_FALSE(parse_blk_spec("socket=/s,path=/x,bps=2T").ok());
    EXPECT_FALSE(parse_blk_spec("socket=/s,path=/x,burst-ms=60001").ok());
    auto n = parse_net_spec("id=nic0,socket=/n,tap=t0");
    ASSERT_TRUE(n.ok());
    EXPECT_EQ(n->id, "nic0");
}

// save_config writes specs back as keys; loading them must give the same device.
TEST(DeviceSpec, KeysRoundTrip) {
    for (const char* text : {"socket=/s,path=/x", "id=d,socket=/s,path=/x,queues=4,readonly=on,direct=on,block-size=4096,"
                                                  "serial=abc,submit-batch=8,client=on,iops=10,bps=1M,read-iops=1,"
                                                  "write-iops=2,read-bps=3,write-bps=4,burst-ms=5",
                             "socket=/s,backend=null,size=1G,block-size=4096",
                             "socket=/s,backend=nbd,uri=nbd+unix:///e?socket=/run/n.sock,timeout=0",
                             "socket=/s,backend=rbd,pool=p,image=i,snap=s1,conf=/etc/c.conf,user=u,timeout=9"}) {
        auto a = parse_blk_spec(text);
        ASSERT_TRUE(a.ok()) << text;
        auto b = parse_blk_keys(to_keys(a.value()));
        ASSERT_TRUE(b.ok()) << b.error().describe();
        EXPECT_EQ(to_keys(b.value()), to_keys(a.value())) << text;
        EXPECT_EQ(b->qos, a->qos);
        EXPECT_EQ(b->size, a->size);
    }
    auto n = parse_net_spec("id=x,socket=/n,tap=t0,queues=2,mac=52:54:00:12:34:56,mtu=9000,client=on");
    ASSERT_TRUE(n.ok());
    auto m = parse_net_keys(to_keys(n.value()));
    ASSERT_TRUE(m.ok()) << m.error().describe();
    EXPECT_EQ(to_keys(m.value()), to_keys(n.value()));
    EXPECT_EQ(m->mac, n->mac);
}
