/* SPDX-License-Identifier: GPL-2.0 */
/*
 * unbd_ublk: an out-of-tree ublk driver speaking the Linux 6.1 ublk UAPI.
 *
 * Objects and who owns what:
 *  - struct unbd_dev: one per ADD_DEV. Its lifetime is the embedded struct
 *    device (the ublkcN character device); the last put frees everything.
 *    dev->mutex serialises control commands.
 *  - struct unbd_queue: one per hardware queue, served by one server task
 *    (the "daemon", fixed by its first FETCH_REQ). q->lock protects the
 *    per-tag state below and the queue's dead/cancelled flags.
 *  - struct unbd_tag: the state of one tag. The io_uring command the server
 *    parked on a tag is owned by exactly one party at a time, which is the
 *    only one allowed to complete it (see enum unbd_tag_state).
 */
#ifndef UNBD_UBLK_H
#define UNBD_UBLK_H

#include <linux/blk-mq.h>
#include <linux/cdev.h>
#include <linux/device.h>
#include <linux/io_uring.h>
#include <linux/mutex.h>
#include <linux/sizes.h>
#include <linux/spinlock.h>
#include <linux/wait.h>
#include <linux/workqueue.h>
#include <uapi/linux/ublk_cmd.h>

#define UNBD_NAME		"unbd_ublk"
#define UNBD_MAX_QUEUES		64
#define UNBD_MAX_DEVS		BIT(MINORBITS)
#define UNBD_MAX_IO_BYTES	SZ_1M

/* Stride between two queues' descriptor areas in the ublkcN mmap space. */
#define UNBD_DESC_STRIDE \
	(UBLK_MAX_QUEUE_DEPTH * sizeof(struct ublksrv_io_desc))

#define UNBD_FEATURES	(UBLK_F_URING_CMD_COMP_IN_TASK |	\
			 UBLK_F_NEED_GET_DATA |			\
			 UBLK_F_USER_RECOVERY |			\
			 UBLK_F_USER_RECOVERY_REISSUE)

enum unbd_tag_state {
	TAG_UNFETCHED = 0,	/* no command from the current server yet */
	TAG_PARKED,		/* we hold the server's command, no request */
	TAG_DISPATCHING,	/* request bound, task work owns the command */
	TAG_AT_SERVER,		/* request handed out, waiting for COMMIT */
	TAG_NEED_DATA,		/* write handed out, waiting for NEED_GET_DATA */
};

struct unbd_tag {
	struct io_uring_cmd	*cmd;
	struct request		*rq;
	u64			buf;
	enum unbd_tag_state	state;
};

struct unbd_dev;

struct unbd_queue {
	struct unbd_dev		*dev;
	struct ublksrv_io_desc	*descs;	/* vmalloc_user(), mapped read-only */
	size_t			descs_bytes;
	u16			id;
	u16			depth;

	spinlock_t		lock;		/* tags[], daemon, counters, flags */
	struct task_struct	*daemon;
	unsigned int		nr_fetched;
	bool			dead;		/* daemon gone, tags aborted */
	bool			cancelled;	/* device stopped: no new commands */

	struct unbd_tag		tags[];
};

struct unbd_dev {
	/* Written under mutex and info_lock; GET_DEV_INFO takes only info_lock */
	struct ublksrv_ctrl_dev_info	info;
	spinlock_t			info_lock;	/* info.state, info.ublksrv_pid */
	struct ublk_params		params;

	struct device		cdev_dev;
	struct cdev		cdev;
	unsigned long		cdev_busy;	/* bit 0: ublkcN is open */

	struct mutex		mutex;		/* control commands, disk, state */
	struct blk_mq_tag_set	tag_set;
	bool			tag_set_ready;
	struct gendisk		*disk;
	bool			started_once;
	bool			quiesced;
	bool			recovering;	/* between START and END_USER_RECOVERY */
	bool			stopping;	/* read locklessly by queue_rq */
	bool			deleting;

	/* Woken when a queue becomes ready or dies, and when ublkcN closes. */
	wait_queue_head_t	waitq;
	struct delayed_work	monitor;
	/* Reads the partition table once START_DEV has returned. */
	struct work_struct	partscan;

	struct unbd_queue	*queues[];
};

/* Per-command scratch space kept in io_uring_cmd::pdu. */
struct unbd_cmd_pdu {
	struct unbd_queue	*q;
	u16			tag;
};

static inline struct unbd_cmd_pdu *unbd_pdu(struct io_uring_cmd *cmd)
{
	return (struct unbd_cmd_pdu *)cmd->pdu;
}

static inline void unbd_set_state(struct unbd_dev *dev, u16 state, int pid)
{
	spin_lock(&dev->info_lock);
	dev->info.state = state;
	dev->info.ublksrv_pid = pid;
	spin_unlock(&dev->info_lock);
}

static inline bool unbd_recovery(const struct unbd_dev *dev)
{
	return dev->info.flags & UBLK_F_USER_RECOVERY;
}

static inline bool unbd_reissue(const struct unbd_dev *dev)
{
	return dev->info.flags & UBLK_F_USER_RECOVERY_REISSUE;
}

static inline bool unbd_need_get_data(const struct unbd_dev *dev)
{
	return dev->info.flags & UBLK_F_NEED_GET_DATA;
}

/* queue.c: the I/O path, the ublkcN character device and death handling */
extern const struct blk_mq_ops unbd_mq_ops;
extern const struct file_operations unbd_cdev_fops;
int unbd_queues_alloc(struct unbd_dev *dev);
void unbd_queues_free(struct unbd_dev *dev);
bool unbd_all_queues_ready(struct unbd_dev *dev);
bool unbd_any_queue_dead(struct unbd_dev *dev);
bool unbd_all_queues_dead(struct unbd_dev *dev);
void unbd_queue_cancel(struct unbd_queue *q);
void unbd_queues_reset(struct unbd_dev *dev);
void unbd_monitor_work(struct work_struct *work);
void unbd_monitor_kick(struct unbd_dev *dev, unsigned long delay);

/* ctrl.c: the control device and device lifecycle */
int unbd_ctrl_init(void);
void unbd_ctrl_exit(void);
void unbd_dev_stop(struct unbd_dev *dev);
void unbd_dev_handle_death(struct unbd_dev *dev);

extern unsigned int unbd_monitor_ms;

#endif /* UNBD_UBLK_H */
